-- An escalation names the department that let the deadline pass (from_department) beside the
-- one it went to (department): a consumer counting breaches per department blamed the
-- department escalated to. Rows stored before this step have none.

ALTER TABLE escalations ADD COLUMN from_department text;
