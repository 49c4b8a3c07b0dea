# Twins
Two playbooks share a name.

## Greet
### Steps
- Say hi

```python
@playbook
async def Other() -> None:
    pass
```

## Greet($name)
### Steps
- Say hi to $name
