# Letters
Draws a random string once and answers questions about it. The string comes
from a plain `def` playbook that uses `random`: after a crash the resumed run
sees the same letters as before.

```python
@playbook
def RandomLetters(count):
    import random
    import string
    return "".join(random.choices(string.ascii_lowercase, k=count))
```

## Main
### Triggers
- At the beginning

### Steps
- Get $first_four from FirstFour
- Tell the user $first_four
- Get $last_four from LastFour
- Tell the user $last_four
- End the program

## FirstFour
### Steps
- Draw $letters with RandomLetters(12)
- Return the first four letters

## LastFour
### Steps
- Return the last four letters of $letters, which FirstFour drew
