CREATE TABLE users (
    id                        uuid NOT NULL,
    tenant_id                 uuid NOT NULL,
    email                     character varying(255) NOT NULL,
    password_hash             character varying(255) NOT NULL,
    name                      character varying(255) NOT NULL,
    role                      character varying(50) NOT NULL,
    created_at                timestamp with time zone DEFAULT now() NOT NULL,
    updated_at                timestamp with time zone DEFAULT now() NOT NULL,
    password_reset_token      character varying(255),
    password_reset_expires_at timestamp with time zone,
    failed_login_attempts     integer DEFAULT 0 NOT NULL,
    locked_until              timestamp with time zone,
    CONSTRAINT users_pkey PRIMARY KEY (id),
    CONSTRAINT users_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON DELETE CASCADE
);

CREATE INDEX idx_users_password_reset_token ON users USING btree (password_reset_token);
CREATE INDEX idx_users_tenant_email ON users USING btree (tenant_id, email);
CREATE UNIQUE INDEX ix_users_email ON users USING btree (email);
