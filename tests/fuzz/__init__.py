"""A crash-consistency fuzzer: generated programs, killed before every effect,
must resume to exactly what an uninterrupted run does (issue 8, "The proof")."""
