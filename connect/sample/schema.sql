-- The sample database `./dev up` (`ragstream connect up --sample`) indexes next to the sample folder.
-- Run as the role ragstream (it must own the tables the connector captures).

CREATE TABLE IF NOT EXISTS articles (
    id         bigserial PRIMARY KEY,
    title      text NOT NULL,
    body       text NOT NULL,
    author     text,
    category   text,
    readers    text[] NOT NULL DEFAULT '{}',
    views      integer NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS tickets (
    ticket_no   text PRIMARY KEY,
    subject     text NOT NULL,
    description text NOT NULL,
    status      text NOT NULL DEFAULT 'open'
);

CREATE TABLE IF NOT EXISTS ticket_readers (
    ticket_no text NOT NULL REFERENCES tickets ON DELETE CASCADE,
    principal text NOT NULL,
    PRIMARY KEY (ticket_no, principal)
);

INSERT INTO articles (id, title, body, author, category, readers) VALUES
 (1, 'Parental leave', E'## Parental leave\n\nEmployees get 16 weeks of paid parental leave, to be taken within the first year.', 'hr-team', 'hr', '{public}'),
 (2, 'VPN set-up', E'## VPN\n\nInstall the WireGuard client and import the profile from the self-service portal. Split tunnelling is off.', 'it-ops', 'it', '{public,staff}'),
 (3, 'Q3 board minutes', E'## Board minutes\n\nThe board approved the budget for the new data centre.', 'ceo-office', 'board', '{board}')
ON CONFLICT (id) DO NOTHING;
SELECT setval('articles_id_seq', GREATEST((SELECT max(id) FROM articles), 1));

INSERT INTO tickets VALUES
 ('HD-101', 'Printer jams on A3', 'The third-floor printer jams whenever A3 paper is used.', 'open'),
 ('HD-102', 'Laptop replacement', 'Battery swollen; needs a replacement laptop.', 'open')
ON CONFLICT (ticket_no) DO NOTHING;
INSERT INTO ticket_readers VALUES ('HD-101', 'group:staff'), ('HD-102', 'group:it-ops'), ('HD-102', 'user:root')
ON CONFLICT DO NOTHING;
