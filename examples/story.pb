# Storyteller
Tells a short story in three chapters, one message at a time.

## Main
### Triggers
- At the beginning

### Steps
- Tell the user that a story in three chapters is coming
- For each chapter from 1 to 3, tell it with Chapter and keep its title
- Tell the user the titles of the chapters
- Return the titles

## Chapter($n) -> str
### Steps
- Tell chapter $n of the story of Mira, the lighthouse keeper, in three short messages
- Return the chapter's title
