-- Notes: the example user-owned resource a fork copies (docs/architecture.md,
-- "Adding a user-owned resource"). The title and the body are sealed under
-- the owner's data key, each bound to (notes, column, note_id): the row holds
-- nothing personal in clear, a value moved to another row does not open, and
-- deleting the account shreds them with the key. The id is a UUIDv7, so its
-- order is creation order: the list pages by (user_id, note_id).
CREATE TABLE notes (
    note_id          uuid        NOT NULL,
    user_id          uuid        NOT NULL,
    title_ciphertext bytea       NOT NULL,
    body_ciphertext  bytea       NOT NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    CONSTRAINT notes_pkey PRIMARY KEY (note_id),
    CONSTRAINT notes_user_fkey FOREIGN KEY (user_id) REFERENCES users (user_id) ON DELETE CASCADE
);
CREATE INDEX notes_user_idx ON notes (user_id, note_id DESC);
