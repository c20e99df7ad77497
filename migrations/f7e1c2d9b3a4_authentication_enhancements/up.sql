ALTER TABLE users ADD COLUMN password_reset_token VARCHAR(255);

ALTER TABLE users ADD COLUMN password_reset_expires_at TIMESTAMP WITH TIME ZONE;

ALTER TABLE users ADD COLUMN failed_login_attempts INTEGER DEFAULT 0 NOT NULL;

ALTER TABLE users ADD COLUMN locked_until TIMESTAMP WITH TIME ZONE;

CREATE INDEX idx_users_password_reset_token ON users (password_reset_token);
