-- The tests' sample polls, the same for every test: RESTART IDENTITY gives the ids in the comments.
TRUNCATE public.choice, public.question RESTART IDENTITY CASCADE;

INSERT INTO public.question (question_text, pub_date) VALUES
    ('What''s new?', '2015-12-15'),                                  -- 1
    ('Is <b>bold</b> & "quoted" ''text'' shown as typed?', '2016-02-29'),  -- 2: HTML special characters
    ('Which colour do you like best?', '2017-06-01');                -- 3

INSERT INTO public.choice (choice_text, votes, question_id) VALUES
    ('Not much', 0, 1),                                              -- 1
    ('The sky', 0, 1),                                               -- 2
    ('Just hacking again', 0, 1),                                    -- 3
    ('<script>alert("gotcha")</script>', 0, 2),                      -- 4
    ('Fish & chips', 1, 2),                                          -- 5
    ('Red', 2, 3),                                                   -- 6
    ('Green', 0, 3),                                                 -- 7
    ('Blue', 5, 3);                                                  -- 8
