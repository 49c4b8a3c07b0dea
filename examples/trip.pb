# Trip planner
Plans a short trip with the traveller. The plan is written by a sub-playbook
that reads the destination and the length of the stay from the agent's state.

## Main
### Triggers
- At the beginning

### Steps
- Ask the user where they want to go and keep the answer in $destination
- Ask how many days they have and keep the number in $days
- If $days is more than 3
    - Say that there is time for day trips
    - Plan the trip with PlanTrip
- Otherwise
    - Say that we will keep it to the city
    - Plan the trip with PlanTrip
- Wish the user a good trip
- Return the plan

## PlanTrip
### Steps
- Write one line per day for $days days in $destination
- Return the lines as a list
