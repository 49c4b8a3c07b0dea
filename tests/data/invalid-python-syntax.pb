# Broken
An agent whose python block does not parse.

```python
import math

@playbook
async def Root(x: float) -> float:
    return math.sqrt(x
```

## Main
### Steps
- Say hello
