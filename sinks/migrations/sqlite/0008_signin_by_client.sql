-- Sign-in throttling looks failures up per client address as well as per user name.
CREATE INDEX IF NOT EXISTS signin_attempts_client ON signin_attempts (client, at);
