-- What the operators' views look up per agency: the last notification it
-- published, and its newest refusal of each kind in the audit log.
CREATE INDEX notifications_by_sender ON notifications (sender, received_at);
CREATE INDEX audit_log_by_agency_action ON audit_log (agency, action, id);
