-- A session's summary counters follow its transcript rows: the answer and error rows of each
-- INSERT add to them, so the store writer needs no UPDATE (and no round trip) per batch.
-- PostgreSQL: one UPDATE per session per statement (a statement-level trigger over the rows
-- it inserted), not one per row: an UPDATE writes a new row version here, and a batch holds
-- hundreds of answers of a few sessions.
-- As SQLite's CAST does, a totalTokens that is not a number counts 0, a fraction is cut, and
-- a number out of BIGINT's range is clamped (never an error that would fail the batch).
CREATE FUNCTION messages_count_into_sessions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE sessions s SET
        message_count = s.message_count + n.answers,
        total_tokens = s.total_tokens + n.tokens,
        total_response_ms = s.total_response_ms + n.response_ms,
        error_count = s.error_count + n.errors
    FROM (
        SELECT session_id,
            COUNT(*) AS answers,
            SUM(CASE WHEN jsonb_typeof(token_usage::jsonb -> 'totalTokens') = 'number'
                THEN trunc(LEAST(GREATEST((token_usage::jsonb -> 'totalTokens')::numeric,
                    -9223372036854775808), 9223372036854775807))::bigint
                ELSE 0 END) AS tokens,
            SUM(COALESCE(response_time_ms, 0)) AS response_ms,
            SUM(CASE WHEN direction = 'error' THEN 1 ELSE 0 END) AS errors
        FROM inserted
        WHERE direction <> 'sent'
        GROUP BY session_id
    ) n
    WHERE s.id = n.session_id;
    RETURN NULL;
END;
$$;
CREATE TRIGGER messages_count_into_sessions AFTER INSERT ON messages
REFERENCING NEW TABLE AS inserted
FOR EACH STATEMENT EXECUTE FUNCTION messages_count_into_sessions();
