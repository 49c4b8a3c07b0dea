# Kitchen
Cooks a dish the user asks for, tasting it as it goes, with a ticket number.

## Main
### Triggers
- At the beginning

### Steps
- Ask the user which dish to cook and wait for the answer
- Cook the dish with Cook
- Tell the user the result
- Return the result

## Taste($dish, $round) -> str
### Steps
- Say how the dish tastes in this round
- Return a short verdict

## Python playbooks

```python
import uuid


@playbook
async def Cook(dish: str) -> str:
    notes = []
    for round in range(3):
        ticket = uuid.uuid4().hex[:8]
        await Say("user", f"stirring {dish}, round {round}, ticket {ticket}")
        verdict = await Taste(dish, round)
        notes.append(f"{verdict} ({ticket})")
    return "; ".join(notes)
```
