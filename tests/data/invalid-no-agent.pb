Just some notes about a program that was never written.

- It has bullets
- but no agent heading
