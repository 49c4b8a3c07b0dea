---
title: "Travel desk"
author: "tests"
---

# Travel desk:AI
Front desk agent that plans a trip with the help of a weather expert.

## Main
### Triggers
- When program starts
### Steps
- Ask the user where they want to travel
- Ask Weather expert for the forecast at the destination
- Suggest what to pack
- End program

# Weather expert
Knows the weather everywhere.

```python
@playbook(public=True, triggers=["When asked about temperature"])
async def Temperature(city: str) -> float:
    return 21.5
```

## Forecast($city)
public: true
Gives a short forecast for a city.
### Steps
- Look up the temperature in $city
- Return a one-line forecast

## Main
### Steps
- Wait for requests from other agents
