# Summer
Generates a file of numbers and sums it in a loop, reporting progress. Python playbooks only:
no LLM call is needed, and every await is still journaled.

## Python playbooks

```python
import random
import tempfile
from pathlib import Path


@playbook
async def MakeNumbers(count: int, seed: int) -> str:
    rng = random.Random(seed)
    path = Path(tempfile.gettempdir()) / f"playbooks-numbers-{seed}-{count}.txt"
    path.write_text("\n".join(str(rng.randint(1, 1000)) for _ in range(count)) + "\n")
    return str(path)


@playbook(triggers=["At the beginning"])
async def Main() -> int:
    path = await MakeNumbers(1000, 7)
    numbers = [int(line) for line in Path(path).read_text().split()]
    total = 0
    for index, number in enumerate(numbers, start=1):
        total += number
        if index % 250 == 0:
            await Say("user", f"summed {index} numbers so far: {total}")
    await Say("user", f"The sum of the {len(numbers)} numbers is {total}.")
    return total
```
