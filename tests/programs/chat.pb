# Concierge
Greets the guest, then answers questions about the weather until they leave.

## Main
### Triggers
- When program begins

### Steps
- Welcome the guest
- Return

## Weather($city)
### Triggers
- When the user asks about the weather

### Steps
- Tell the user the weather in $city
- Return the forecast
