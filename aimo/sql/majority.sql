-- majority.sql: plain majority vote. Per problem and answer: score = the number of candidates
-- whose answer_int is an integer in [0, 99999] (a critique row counts $critique_weight, 1 by
-- default, so with the defaults this is a plain count); votes = that count of candidates.
-- Reads: candidates (candidates.sql), the rows it marks counted. One row per (problem_id, answer);
-- rank.sql picks the winner.
SELECT
    problem_id,
    answer_int AS answer,
    sum(w_majority) AS score,
    count(*) FILTER (WHERE w_majority > 0) AS votes
FROM candidates
WHERE counted
GROUP BY problem_id, answer_int
