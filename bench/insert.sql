-- P1 single-row INSERT of a new task (about 500 bytes). {table} and {seq}
-- are filled in by the bench binary; ids continue after the preloaded rows.
INSERT INTO {table} (id, title, description, status, assignee, due_at, tags, created_at, updated_at)
VALUES (md5('task-' || nextval('{seq}'))::uuid::text,
        'Prepare the quarterly budget review with the team',
        'Collect the numbers from every team lead, reconcile them with the invoices in the shared folder, draft the summary for the board and schedule a follow up meeting with finance before the release of the quarterly report. Check the open tickets for vendor renewals and flag any contract that expires this quarter.',
        'todo', 'alice', now() + interval '14 days', '{billing,docs}', now(), now());
