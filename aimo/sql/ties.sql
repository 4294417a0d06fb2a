-- ties.sql: per problem, the vote's winner and runner-up under one strategy, whether their
-- scores tie, and which rule of rank.sql's order broke the tie.
-- Reads: tallies(problem_id, answer, score, votes) from a strategy's query, and
-- problems(problem_id). Ranked as rank.sql ranks: higher score, then more votes, then the
-- smaller answer, over answers with a value and a positive score.
--   answer, votes                      the winner (NULL, 0 when no answer competes)
--   runner_up, runner_up_votes         the second (NULL when none)
--   tie                                the two scores are equal, as rank.sql compares them
--   broken_by                          for a tie: 'more votes' or 'smaller answer'; else NULL
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
),
pairs AS (
    SELECT
        p.problem_id,
        top1.answer,
        coalesce(top1.votes, 0) AS votes,
        top2.answer AS runner_up,
        top2.votes AS runner_up_votes,
        coalesce(top1.score = top2.score, false) AS tie
    FROM problems AS p
    LEFT JOIN ranked AS top1 ON top1.problem_id = p.problem_id AND top1.place = 1
    LEFT JOIN ranked AS top2 ON top2.problem_id = p.problem_id AND top2.place = 2
)
SELECT
    *,
    CASE
        WHEN NOT tie THEN NULL
        WHEN votes > runner_up_votes THEN 'more votes'
        ELSE 'smaller answer'
    END AS broken_by
FROM pairs
ORDER BY problem_id
