-- The polls tables as steps 4 to 9 define them (aiohttpdemo_polls/db.py), for the tests' own database.
-- Written by hand on purpose: a suite must not depend on the code it checks to build its fixtures.
-- IF NOT EXISTS keeps it cheap to run before every test; seed.sql then resets the rows.
CREATE TABLE IF NOT EXISTS public.question (
    id            SERIAL PRIMARY KEY,
    question_text VARCHAR(200) NOT NULL,
    pub_date      DATE NOT NULL
);

CREATE TABLE IF NOT EXISTS public.choice (
    id          SERIAL PRIMARY KEY,
    choice_text VARCHAR(200) NOT NULL,
    votes       INTEGER NOT NULL DEFAULT 0,
    question_id INTEGER NOT NULL REFERENCES public.question (id) ON DELETE CASCADE
);
