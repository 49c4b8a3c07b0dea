# Coder
Writes code.

## Main
### Steps
- Say hello

```python
@playbook
async def Helper() -> str:
    return "never closed"
