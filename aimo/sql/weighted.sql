-- weighted.sql: the plan's vote. Per problem and answer: score = the sum of w_weighted over the
-- candidates giving that answer (clean code counts $clean_code, other valid answers $other,
-- out-of-range integers $invalid, each times the source weight; see candidates.sql); votes = the
-- number of those candidates with a positive weight.
-- Reads: candidates (candidates.sql), the rows it marks counted. One row per (problem_id, answer);
-- rank.sql picks the winner.
SELECT
    problem_id,
    answer_int AS answer,
    sum(w_weighted) AS score,
    count(*) FILTER (WHERE w_weighted > 0) AS votes
FROM candidates
WHERE counted
GROUP BY problem_id, answer_int
