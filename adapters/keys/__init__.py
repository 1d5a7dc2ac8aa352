"""The ledger's own secret keys and what they protect: data keys per student and lesson
date, kept wrapped in the database (data_keys.py), and the sealing of students' details
and lessons' content with them (sealing.py)."""
