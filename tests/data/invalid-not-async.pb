# Sync
An agent with a synchronous playbook.

## Main
### Steps
- Call Double(2)

```python
@playbook
async def Fine(x: int) -> int:
    return x

@playbook(public=True)
def Double(x: int) -> int:
    return x * 2
```
