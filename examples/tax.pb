# Host agent
Talks with the person and works out their tax with the help of the tax accountant.

## Main
### Trigger
- When program starts
### Steps
- Ask user for $gross_income
- Ask Tax accountant what the percent $tax_rate would be for the $gross_income
- Calculate $tax_amount
- Tell user the $tax_amount
- End program

```python
@playbook
async def CalculateTax(gross_income, tax_rate):
    """
    The tax due on a gross income at a tax rate given in percent
    """
    return gross_income * tax_rate / 100
```

# Tax accountant agent
Knows which tax rate applies to an income.

## Get tax rate($gross_income)
public: true

### Steps
- If $gross_income < 100000
  - return 15%
- Otherwise
  - return 25%

## Tax strategy meeting
meeting: true

### Steps
- When user asks about best retirement plan to save tax
  - Talk about retirement plans
