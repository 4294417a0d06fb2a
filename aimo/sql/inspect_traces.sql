-- inspect_traces.sql: per trace, what the vote made of it (the trace inspector's columns).
-- Reads: candidates (candidates.sql, inlined). counted: the strategies count the row; can_vote:
-- the row rule alone (not replaced by a critique); valid: an answer in [0, 99999]; clean,
-- verified: the execution flags; w_*: its weight column under each strategy (majority,
-- weighted and verified's w_weighted, logprob, entropy, tail_entropy, share_confidence's
-- confidence w_conf, the filter strategies' w_min_conf and w_tail_conf).
SELECT
    trace_id,
    counted,
    can_vote,
    valid,
    clean,
    verified,
    w_majority,
    w_weighted,
    w_logprob,
    w_entropy,
    w_tail_entropy,
    w_conf,
    w_min_conf,
    w_tail_conf
FROM candidates
