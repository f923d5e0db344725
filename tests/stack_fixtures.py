"""Local-stack fixtures; filled in with the local stack (issue 4)."""
