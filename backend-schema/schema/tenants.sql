CREATE TABLE tenants (
    id         uuid NOT NULL,
    name       character varying(255) NOT NULL,
    slug       character varying(100) NOT NULL,
    plan       character varying(50) NOT NULL,
    settings   json NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT tenants_pkey PRIMARY KEY (id)
);

CREATE UNIQUE INDEX ix_tenants_slug ON tenants USING btree (slug);
