# Runs at boot on the board: the field node (firmware/README.md).
from node import app

app.main()
