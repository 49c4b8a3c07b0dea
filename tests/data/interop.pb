# Report writer
Demonstrates Markdown playbooks calling Python playbooks and back.

```python
import json

@playbook
async def BuildReport(region: str) -> str:
    """Python gathers data, then asks a Markdown playbook for prose."""
    data = {"sales": 1000, "region": region}
    summary = await Summarize(json.dumps(data))
    message = f"""Report for {region}:
{summary}"""
    return message
```

## Summarize($data) -> str
### Steps
- Write a one-sentence summary of $data
- Return the summary

## Main
### Triggers
- At the beginning
### Steps
- $report = BuildReport("North")
- Say $report to the user
- $total = AddNumbers(2, 3)
- Tell the user the $total
- End program

## Python playbooks

```python
@playbook(public=True)
async def AddNumbers(a: int, b: int = 0) -> int:
    return a + b
```
