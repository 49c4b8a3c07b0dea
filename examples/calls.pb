# Accountant
Adds numbers and explains the result. Markdown and Python playbooks call each other.

## Main
### Triggers
- At the beginning

### Steps
- Tell the user you will add 3, 4 and 5
- Compute the total with Total
- Tell the user the total and its description
- Return the total

## Describe($n) -> str
### Steps
- Work out whether $n is even or odd
- Return a one-line description of $n

## Python playbooks

```python
@playbook
async def Total(numbers: list) -> dict:
    total = 0
    for n in numbers:
        total += n
        await Say("user", f"running total: {total}")
    description = await Describe(total)
    return {"total": total, "description": description}
```
