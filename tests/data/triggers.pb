# Bank teller
Helps a customer check their account balance.

```python
@playbook(triggers=["When user provides a PIN"])
async def ValidatePin(pin: str) -> bool:
    """Check the PIN has four digits."""
    while len(pin) != 4 or not pin.isdigit():
        await Say("user", "Sorry, that PIN is not valid. Please try again.")
        pin = await Yld("user")
    return True
```

## Main
### Triggers
- At the beginning
### Steps
- Ask user for their $pin
- Ask user for their $email
- Load the account for $email
- Tell the user their balance
- End program

## ValidateEmail
### Triggers
- When user provides an email address
- When the email looks mistyped
### Steps
- While $email is not valid
  - Tell user the email is not valid and ask again
- Return $email

## BalanceTooLow
### Trigger
- When $balance < 100
### Steps
- Warn the user that their balance is low
