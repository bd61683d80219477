-- 0003: users (GitHub accounts) and the owner of each app.
--
-- Reversible: yes, by dropping the foreign key, the index and the table (apps keep
-- their owner_id values but lose the link to a user).
--
-- users: the identity is the GitHub user ID, which never changes; the login (user
-- name) can be renamed on GitHub, so it is only refreshed at each login, like the
-- display name. `id` is our own key so that apps.owner_id does not depend on one
-- provider. last_login_at is set at every successful login.
--
-- apps.owner_id: NULL for apps created from the command line (no user). No cascade
-- on delete: deleting a user must delete their apps' data explicitly first, the way
-- deleting an app does; a plain FK makes forgetting that an error instead of a
-- silent orphaning. The index serves "list my apps" and the FK check.

CREATE TABLE users (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    github_id     bigint NOT NULL UNIQUE,
    login         text NOT NULL,
    name          text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_login_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE apps
    ADD CONSTRAINT apps_owner_id_fkey FOREIGN KEY (owner_id) REFERENCES users (id);

CREATE INDEX apps_owner ON apps (owner_id);
