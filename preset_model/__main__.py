from dexed_data.console import preset_model_main

preset_model_main()
