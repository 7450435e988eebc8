-- Finding a patient by their portal account (the portal, the patient's own audit events).
CREATE INDEX patients_user ON patients (tenant_id, user_id);
