# Host
The front desk: talks with the person, asks the accountant and the clerk.

## Main
### Triggers
- When program begins

### Steps
- Ask the user for their gross income
- Get the tax rate with Accountant.GetTaxRate
- Ask the Clerk to file the return and wait for the clerk's answer
- Tell the user the tax and the clerk's answer
- End the program

# Accountant
model: openai/accountant-model
Knows the tax rates.

## GetTaxRate($income)
public: true

### Steps
- Return 15 if $income is under 100000, else 25

# Clerk
model: openai/clerk-model
Files tax returns when asked, and says so.
