# Calculator
Does arithmetic with typed parameters.

## Main
### Triggers
- At the beginning
### Steps
- $sum = Add(2, 3)
- $greeting = Greet("Ada", 3)
- Tell the user $sum and $greeting
- End program

## Add($a, $b) -> int
### Steps
- Return $a + $b

## Greet($name: str, $times=3, $punctuation: str = "!") -> str
Builds a greeting.
### Steps
- Return "Hello " + $name repeated $times times, ending with $punctuation

## Pair(left, right)
### Steps
- Return [left, right]

```python
@playbook
async def Scale(values: list, factor: float = 1.0, *, clamp: bool = False) -> list:
    return [v * factor for v in values]
```
