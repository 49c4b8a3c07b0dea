# Planner
Plans a day.

## Main
### Triggers
- At the beginning
### Steps
- Ask the user what they want to do
  - Offer a few ideas
- Make a plan
    - Jumped two levels at once
- End program
