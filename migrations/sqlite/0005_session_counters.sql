-- A session's summary counters follow its transcript rows: every answer or error row adds to
-- them as it is inserted, so the store writer needs no UPDATE (and no round trip) per batch.
CREATE TRIGGER messages_count_into_sessions AFTER INSERT ON messages
WHEN NEW.direction <> 'sent'
BEGIN
    UPDATE sessions SET
        message_count = message_count + 1,
        total_tokens = total_tokens
            + COALESCE(CAST(json_extract(NEW.token_usage, '$.totalTokens') AS INTEGER), 0),
        total_response_ms = total_response_ms + COALESCE(NEW.response_time_ms, 0),
        error_count = error_count + (NEW.direction = 'error')
    WHERE id = NEW.session_id;
END;
