terraform {
  # 1.11 for write-only arguments (secret_data_wo): the alert-sink secrets
  # reach Secret Manager without ever being written to the state file.
  required_version = ">= 1.11"

  required_providers {
    google = {
      source = "hashicorp/google"
      # 6.25 is the first 6.x with secret_data_wo on secret versions.
      version = "~> 6.25"
    }
    # google_project_service_identity (which makes Google create a service
    # agent before we grant it anything) exists only in google-beta.
    google-beta = {
      source  = "hashicorp/google-beta"
      version = "~> 6.25"
    }
  }
}

provider "google" {
  project = var.project
  region  = var.region
}

provider "google-beta" {
  project = var.project
  region  = var.region
}
