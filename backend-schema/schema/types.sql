-- Enum types. The values' order is part of the type: append new values at the end.

CREATE TYPE abteststatus AS ENUM ('draft', 'running', 'paused', 'completed', 'archived');
CREATE TYPE abtesttype AS ENUM ('question_order', 'cta_text', 'cta_color', 'intro_text', 'custom');
CREATE TYPE smsstatus AS ENUM ('pending', 'sent', 'delivered', 'failed', 'undelivered');
