-- Destructive: the reset tokens, lockout state and failed-login counters are lost.
DROP INDEX idx_users_password_reset_token;

ALTER TABLE users DROP COLUMN locked_until;

ALTER TABLE users DROP COLUMN failed_login_attempts;

ALTER TABLE users DROP COLUMN password_reset_expires_at;

ALTER TABLE users DROP COLUMN password_reset_token;
