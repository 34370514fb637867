-- The app's install id (a random UUID the app creates at first launch and
-- keeps in its sandbox, sent as X-App-Install-Id), bound to the session
-- that signed in. Stored only as a keyed blind index: equality is all the
-- drift check needs, and a dump does not hand out device identifiers.
ALTER TABLE sessions
    ADD COLUMN install_id_index bytea,
    ADD CONSTRAINT sessions_install_id_index_length CHECK (length(install_id_index) = 32);
