"""The controller's side of backups: the backup host (enrolment, repositories, pruning), the school
server's backup program over SSH, restores and the restore drill."""
