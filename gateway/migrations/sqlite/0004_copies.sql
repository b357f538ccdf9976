-- Statutory copies (抄送): the recipients the gateway added to a
-- notification under its policy's copy rules, a fact of the record.
--
-- copies: "<agency>:<rule>" entries separated by single spaces, in the
-- order added; empty when the gateway added none. A row with copies has
-- them covered by its chain link: chain = SHA-256(previous chain ||
-- sequence || received_at || content_hash || SHA-256(copies)); a row
-- without keeps the formula of 0003, so rows stored before this migration
-- still verify.
ALTER TABLE notifications ADD COLUMN copies TEXT NOT NULL DEFAULT '';
