-- logprob.sql: confidence-weighted vote. Per problem and answer: score = the sum over the valid
-- candidates giving that answer of exp(min(mean_logprob, 0)) times the source weight, i.e. the
-- geometric-mean probability per token the model gave its own completion (1 for a certain one,
-- towards 0 for a guess); a candidate with a NULL, NaN or infinite mean_logprob counts 0.
-- votes = the number of candidates with a positive weight.
-- Reads: candidates (candidates.sql), the rows it marks counted. One row per (problem_id, answer);
-- rank.sql picks the winner.
SELECT
    problem_id,
    answer_int AS answer,
    sum(w_logprob) AS score,
    count(*) FILTER (WHERE w_logprob > 0) AS votes
FROM candidates
WHERE counted
GROUP BY problem_id, answer_int
