-- rank.sql: from per-answer tallies to one VOTES row per problem.
-- Reads: tallies(problem_id, answer, score, votes) from a strategy's query, and
-- problems(problem_id). Parameter: $strategy (the name written in the strategy column).
-- Only answers with a non-NULL value and a positive score compete. They are ranked by a total
-- order: higher score first, then more votes, then the smaller answer. The first is the answer,
-- the second the runner-up; margin = score - runner_up_score (score itself when there is no
-- runner-up); runner_up_votes tells how a tie of scores was broken (more votes, else the smaller
-- answer). Every problem gets a row: one with no competing answer has answer, runner_up,
-- runner_up_score, runner_up_votes and margin NULL, score 0 and votes 0.
WITH ranked AS (
    SELECT
        problem_id,
        answer,
        score,
        votes,
        row_number() OVER (
            PARTITION BY problem_id ORDER BY score DESC, votes DESC, answer ASC
        ) AS place
    FROM tallies
    WHERE answer IS NOT NULL AND score > 0
)
SELECT
    p.problem_id,
    CAST($strategy AS VARCHAR) AS strategy,
    top1.answer,
    coalesce(top1.score, 0.0) AS score,
    coalesce(top1.votes, 0) AS votes,
    top2.answer AS runner_up,
    top2.score AS runner_up_score,
    top2.votes AS runner_up_votes,
    top1.score - coalesce(top2.score, 0.0) AS margin
FROM problems AS p
LEFT JOIN ranked AS top1 ON top1.problem_id = p.problem_id AND top1.place = 1
LEFT JOIN ranked AS top2 ON top2.problem_id = p.problem_id AND top2.place = 2
ORDER BY p.problem_id
