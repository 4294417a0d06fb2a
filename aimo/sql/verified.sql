-- verified.sql: vote among code-verified candidates only. A candidate is verified when the fresh
-- re-run of its code printed the same integer as its boxed answer (executions.agrees). Per problem
-- and answer: score = the sum of w_weighted (the weighted strategy's weight) over the verified
-- candidates giving that answer, votes = their number with a positive weight. A problem with no
-- verified candidate of positive weight falls back to the weighted tallies (all candidates), so
-- it still gets an answer when any valid candidate exists.
-- Reads: candidates (candidates.sql), the rows it marks counted. One row per (problem_id, answer);
-- rank.sql picks the winner.
SELECT
    tally.problem_id,
    tally.answer,
    CASE WHEN has.problem_id IS NULL THEN tally.score ELSE tally.v_score END AS score,
    CASE WHEN has.problem_id IS NULL THEN tally.votes ELSE tally.v_votes END AS votes
FROM (
    SELECT
        problem_id,
        answer_int AS answer,
        sum(w_weighted) AS score,
        count(*) FILTER (WHERE w_weighted > 0) AS votes,
        coalesce(sum(w_weighted) FILTER (WHERE verified), 0.0) AS v_score,
        count(*) FILTER (WHERE verified AND w_weighted > 0) AS v_votes
    FROM candidates
    WHERE counted
    GROUP BY problem_id, answer_int
) AS tally
LEFT JOIN (
    SELECT DISTINCT problem_id
    FROM candidates
    WHERE counted AND verified AND w_weighted > 0 AND answer_int IS NOT NULL
) AS has ON has.problem_id = tally.problem_id
