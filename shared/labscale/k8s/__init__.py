"""Run a study on Kubernetes: render Jobs or an Argo Workflow per plan, submit and watch Jobs.

pools (node pools and their resources) · memory (GPU memory planner) · target (names, images)
· pod (the stage pod: container, security, placement) · jobs (one batch/v1 Job per RunSpec)
· argo (Workflow / CronWorkflow DAG) · render (`labscale render`) · submit (`labscale submit`).
"""
