CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
INSERT OR IGNORE INTO users (name) VALUES ('turing'), ('ritchie'), ('lovelace'), ('hamilton');
