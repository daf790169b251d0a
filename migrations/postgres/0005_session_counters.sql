-- A session's summary counters follow its transcript rows: every answer or error row adds to
-- them as it is inserted, so the store writer needs no UPDATE (and no round trip) per batch.
-- As SQLite's CAST does, a totalTokens that is not a number counts 0, a fraction is cut, and
-- a number out of BIGINT's range is clamped (never an error that would fail the batch).
CREATE FUNCTION messages_count_into_sessions() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    tokens jsonb := NEW.token_usage::jsonb -> 'totalTokens';
BEGIN
    UPDATE sessions SET
        message_count = message_count + 1,
        total_tokens = total_tokens + CASE WHEN jsonb_typeof(tokens) = 'number'
            THEN trunc(LEAST(GREATEST(tokens::numeric, -9223372036854775808), 9223372036854775807))::bigint
            ELSE 0 END,
        total_response_ms = total_response_ms + COALESCE(NEW.response_time_ms, 0),
        error_count = error_count + CASE WHEN NEW.direction = 'error' THEN 1 ELSE 0 END
    WHERE id = NEW.session_id;
    RETURN NULL;
END;
$$;
CREATE TRIGGER messages_count_into_sessions AFTER INSERT ON messages
FOR EACH ROW WHEN (NEW.direction <> 'sent')
EXECUTE FUNCTION messages_count_into_sessions();
