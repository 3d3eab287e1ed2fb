from .console import dexed_data_main

dexed_data_main()
