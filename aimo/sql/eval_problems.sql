-- eval_problems.sql: per problem of the problems file, the counts the evaluation reports
-- (aimo/evaluate.py): every candidate (generate, reflexion and critique rows) unless named.
-- Reads: candidates (candidates.sql, materialised) and problems(problem_id, answer).
--   n_traces           candidate rows
--   n_generate         generate rows
--   n_valid            rows whose answer_int is in [0, 99999]
--   n_correct          rows whose answer_int equals the known answer (NULL if it is unknown)
--   n_pool             generate rows that can vote (can_vote; the at-k curves draw from these)
--   n_correct_pool     those with the known answer (pass@k counts these)
--   n_correct_counted  rows that can vote with the known answer (some is: the oracle)
--   completion_tokens  completion tokens of every row; generate_tokens: of the generate rows
SELECT
    p.problem_id,
    count(c.problem_id) AS n_traces,
    count(c.problem_id) FILTER (WHERE c.source = 'generate') AS n_generate,
    count(c.problem_id) FILTER (WHERE c.valid) AS n_valid,
    CASE WHEN p.answer IS NULL THEN NULL
         ELSE count(c.problem_id) FILTER (WHERE c.answer_int = p.answer) END AS n_correct,
    count(c.problem_id) FILTER (WHERE c.source = 'generate' AND c.can_vote) AS n_pool,
    count(c.problem_id) FILTER (WHERE c.source = 'generate' AND c.can_vote
                                AND c.answer_int = p.answer) AS n_correct_pool,
    count(c.problem_id) FILTER (WHERE c.counted AND c.answer_int = p.answer) AS n_correct_counted,
    coalesce(sum(c.completion_tokens), 0) AS completion_tokens,
    coalesce(sum(c.completion_tokens) FILTER (WHERE c.source = 'generate'), 0) AS generate_tokens
FROM problems AS p
LEFT JOIN candidates AS c ON c.problem_id = p.problem_id
GROUP BY p.problem_id, p.answer
ORDER BY p.problem_id
